"""Building and running models, whatever the stage: loading LMs and reward models, the teacher-forced forward, reward
scores."""
