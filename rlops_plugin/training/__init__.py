"""Policy updates from the deployed checkpoint: offline RL, behaviour cloning, simulator fine-tuning, DPO."""
