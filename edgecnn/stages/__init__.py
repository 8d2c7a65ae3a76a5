"""The stage core every task shares: export (the format registry x the task's float model), the budget
verdict, and the run-directory bookkeeping around them (:mod:`edgecnn.store`).

A task (``edgecnn.tasks.<task>``) supplies what differs — its float model, its int8 scorer, its metrics,
its report sections — and calls these stages; it never writes ``state.json`` or copies their loops.
"""
