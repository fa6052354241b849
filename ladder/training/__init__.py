"""Training the chat model and its reward model: the trainer plumbing the training stages share, the chat
template, SFT, the preference methods, merging and the model card."""
