"""The experiments, in rooms by layer: `runs` (the run library: settings, data,
engines, the store, sweeps), the figure framework here (`figure`, `claims`,
`scaling_model`, `registry`), `papers` (one module per paper) and `tools`
(commands over them: the verdicts, the report, benchmarks, Kaggle).

Importing the package applies the per-platform settings
(`reproduce.runs.settings`) before anything loads TensorFlow.
"""

from reproduce import moved
from reproduce.runs import settings

settings.apply()
moved.install()  # the modules' old paths, deprecated
