"""TRL glue: the Trainer-based SFT and reward-model stages, and the RLOO, GRPO and DPO alternatives to PPO."""
