"""Context Encoder (Pathak et al., CVPR 2016): the networks are in ``model.py``; the system is assembled here."""
