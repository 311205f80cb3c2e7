"""fedfunc: federated learning orchestrated by Azure Durable Functions.

The library the Function App (``function_app.py``, ``orchestrations/``, ``activities/``) is built on.
Domain code here (aggregation, privacy, tasks, comparison) imports nothing from Azure.
"""
