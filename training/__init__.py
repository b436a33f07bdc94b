"""Training entry points: `python -m training.train --config training/configs/buy_demo.yaml`."""
