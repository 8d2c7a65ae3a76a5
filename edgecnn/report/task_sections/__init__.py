"""Report sections of one task or one kind of artifact (anomaly, segmentation, microcontrollers).

Every public module here is imported when a report is rendered (its ``register_section`` calls
add it to the page); a section names the tasks it belongs to (``tasks=("anomaly",)``), so a
classifier's page never shows it. Like the built-in sections, they read only the run directory.
"""
