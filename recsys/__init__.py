"""Music recommendation: data stages, a LightFM hybrid, evaluation, monitoring and serving.

Modules
-------
cli
    Every command line (``recsys ...``); the only library code that imports ``flows``.
cluster
    The reference topology on several hosts (network namespaces).
serving
    The BentoML service, its Starlette app and the listener's page.
stages
    One function per DVC stage: read inputs, call the library, write outputs.
reporting
    Documents for people: EDA, model card, stakeholder report, slides.
monitoring, experiments, retraining
    The loop after serving: drift and bias, online experiments, retraining on feedback.
registry
    The BentoML model store as registry: packaging, lifecycle, the model exchange, publishing.
feedback
    The feedback store: events, served lists, pseudonyms, exports, erasures.
offline
    Features, split, training, tuning, evaluation, the gate.
data, models
    Raw data to prepared tables; the recommenders behind one interface.
specs
    The table of models and the table of data sets: adding one is one entry there plus its module.
config, paths, columns, errors, io, memory, run_lock, project, schedules
    Settings, names, errors, atomic writes, memory bounds, the run lock, the project, the schedules.

Layers (``pyproject.toml``, checked by ``lint-imports`` in ``make lint``) run top to bottom in this list:
nothing imports a package listed above it.
"""

__version__ = "0.1.0"
