"""Training configs: one `get_config()` file per method or ablation (ml_collections).

Each starts from common.base_config() and adds its schedule's sections; experiments.train
validates it (common.validate) before training.
"""
