"""The pieces of PPO-RLHF that the stage (`align/ppo.py`) puts together: the math as pure functions (losses.py)."""
