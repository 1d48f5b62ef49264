"""Model editing as memorization: ROME, MEMIT and EMMET (Gupta et al., "A Unified Framework for
Model Editing"), their covariance statistics, and the evaluation of what an edit wrote."""
