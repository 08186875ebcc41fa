"""Token lists shared by the ASR model and every LM."""
