"""Training configs: one `get_config()` file per method or ablation (ml_collections).

Each starts from common.base_config() and adds its schedule's sections. Config files import only
ml_collections (and each other): loading one imports no jax. experiments.train validates the
config (facecraft.train.config_schema.validate) before training.
"""
