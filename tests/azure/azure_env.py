"""Settings fixtures shared by the Azure tests: a keyed local env and a complete aml env."""
from __future__ import annotations

KEYED = ("DefaultEndpointsProtocol=http;AccountName=orch;AccountKey=Zm9vYmFy;"
         "BlobEndpoint=http://127.0.0.1:10000/orch;TableEndpoint=http://127.0.0.1:10002/orch;")
IDENTITY = {"FEDFUNC_STORAGE__blobServiceUri": "https://orch.blob.core.windows.net/",
            "FEDFUNC_STORAGE__tableServiceUri": "https://orch.table.core.windows.net"}
SUB = "00000000-0000-0000-0000-000000000001"


def aml_env(tmp_path, **over):
    env = {**IDENTITY, "FEDFUNC_JOB_BACKEND": "aml",
           "FEDFUNC_AML_SUBSCRIPTION_ID": SUB, "FEDFUNC_AML_RESOURCE_GROUP": "rg-fl",
           "FEDFUNC_AML_WORKSPACE": "mlw-fl", "FEDFUNC_AML_ENVIRONMENT": "fedfunc-silo:3",
           "FEDFUNC_AML_CODE": str(tmp_path), "FEDFUNC_AML_LOCATION": "westeurope",
           "FEDFUNC_AML_ORCHESTRATOR_PRINCIPAL_ID": "00000000-0000-0000-0000-0000000000aa",
           "FEDFUNC_AML_ORCHESTRATOR_STORAGE_ID":
               f"/subscriptions/{SUB}/resourceGroups/rg-fl/providers/Microsoft.Storage/storageAccounts/orchsa",
           "FEDFUNC_AML_FUNCTION_APP_ID": f"/subscriptions/{SUB}/resourceGroups/rg-fl/providers/Microsoft.Web/sites/fl-func"}
    env.update(over)
    return {k: v for k, v in env.items() if v is not None}
