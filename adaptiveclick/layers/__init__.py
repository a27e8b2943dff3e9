"""Neural-network layers of adaptiveclick (the multi-scale deformable attention operator)."""
