"""``task: classify``: one label per image (the stages in :mod:`edgecnn.classify.stages`)."""
