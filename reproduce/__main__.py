"""`python -m reproduce`: the settings in force in a process this suite starts."""

import os

from reproduce.runs import settings

backend, onednn = settings.in_force()
print(f"backend={backend} {settings.ONEDNN}={os.environ.get(settings.ONEDNN, '(unset)')} "
      f"onednn_in_force={onednn}")
