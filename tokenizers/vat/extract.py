"""Implicit field -> mesh for VAT: the modality-level code lives in `tokenforge.mesh_fields` (used by every mesh
tokenizer's verbs); re-exported here for VAT's modules."""

from tokenforge.mesh_fields import grid_points, logit_grid, logit_grids, marching_cubes

__all__ = ["grid_points", "logit_grid", "logit_grids", "marching_cubes"]
