"""Music recommendation: data stages, a LightFM hybrid, evaluation, monitoring and serving."""

__version__ = "0.1.0"
