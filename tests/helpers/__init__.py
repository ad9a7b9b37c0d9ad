"""What several test modules share: composing configs, running commands, small stand-in datasets."""
