"""The methods of the paper: identifiers in the paper's order and their display names.

Kept free of torch so that summaries and figures need no deep-learning stack.
"""

METHODS = ("vae", "beta_vae", "ivae", "svae", "svae_plus")
DISPLAY_NAMES = {
    "vae": "VAE",
    "beta_vae": "β-VAE",
    "ivae": "iVAE",
    "svae": "sVAE",
    "svae_plus": "sVAE+",
}
