"""`fedfunc host`: a local, durable host for Azure Durable Functions Python (v2 model) apps.

It runs the same `function_app.py` that ships to Azure, with orchestrations replayed by the
real `azure-functions-durable` SDK and history kept in SQLite, so a killed host resumes.
"""
