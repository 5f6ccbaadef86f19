"""Fine-tuning: training data (formats, checks, splits) and the trainers built on it."""
