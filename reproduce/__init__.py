"""The experiments: data, the runner, the engines and one module per figure.

Importing the package applies the per-platform settings (`reproduce.settings`)
before anything loads TensorFlow.
"""

from reproduce import settings

settings.apply()
