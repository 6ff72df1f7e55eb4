"""Training: the loop (:mod:`.trainer`) with its data (:mod:`.loaders`), model parts (:mod:`.model_parts`) and
validation (:mod:`.validation`), launching (:mod:`.launch`), distribution, stopping, optimizers."""
