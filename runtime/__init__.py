"""Recipes, the conductor, model access and sandboxes: everything that runs a recipe."""

import os

# litellm fetches a price map from the network at import unless told to use its bundled copy;
# set before anything in the runtime can import it.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
