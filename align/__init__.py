"""align: InstructGPT-style SFT -> reward model -> PPO for GPT-2. Importing this package imports no torch."""
