"""The run library every figure stands on: a run's settings and key
(`config`), the data and input pipelines (`datasets`, `pipeline`), one run
trained (`train`, with the fast `engine` or `fit`), the resumable store
(`store`), the plan and dry run (`plan`), a list of runs here or on Ray
(`sweep`, `cluster`, `devices`), TensorBoard logs (`tensorboard`), and the
environment and command-line handling the rest ask (`settings`, `cli`)."""
