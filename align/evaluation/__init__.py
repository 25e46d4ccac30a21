"""Judging any model: sampling responses, teacher-forced scores, the gold judge, reward-model evaluation, tables."""
