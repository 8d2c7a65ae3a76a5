"""Datasets: folder and MVTec loaders, splits, augmentation, the bundled defect set."""
