"""PPO only: the math as pure functions (losses.py), the policy and value module, the sampler and its GPT-2 decoding
step, PPO's exact-resume checkpoint, and its alarms. `align/ppo.py` puts them together."""
