"""Training: the loop (:mod:`.trainer`), launching (:mod:`.launch`), distribution, stopping, optimizers."""
