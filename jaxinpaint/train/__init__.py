"""The one trainer (``trainer.train_and_evaluate``), its state pytree (``state``) and optimisers by name
(``optim``)."""
