"""Model builders: a registry of families, each taking RGB 0-255 with normalisation in the graph."""
from edgecnn.arch.registry import (
                                   ModelEntry,
                                   create_model,
                                   create_task_model,
                                   get_model_entry,
                                   list_models,
                                   register_model,
)

__all__ = ["ModelEntry", "create_model", "create_task_model", "get_model_entry", "list_models", "register_model"]
