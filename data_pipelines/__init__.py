"""Reading and preparing face data: numpy only, never imports jax."""
