"""The bundle as an MLflow pyfunc model, so ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` work.

Input: a DataFrame with a ``text`` column (optionally ``channel``). Output: one row per text with
``intent``, ``confidence``, ``decision`` and ``options`` (clarification intents, comma-separated).
The full Lingxi response (entities, rules, ranking) is what the Lingxi server returns; this flavour
is for batch scoring and interoperability.
"""

from __future__ import annotations

import mlflow.pyfunc


class LingxiPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from lingxi.serving.loading import pipeline_from_bundle
        from lingxi.training.bundle import load_bundle

        self.pipeline = pipeline_from_bundle(load_bundle(context.artifacts["bundle"]))

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from lingxi.nlu.parse import ParseContext

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame({"text": list(model_input)})
        rows = []
        for _, row in frame.iterrows():
            channel = row.get("channel") if "channel" in frame.columns else None
            result = self.pipeline.parse(str(row["text"]), ParseContext(channel=channel))
            options = ",".join(o.intent for o in result.clarification.options) if result.clarification else ""
            rows.append({"intent": result.intent.name, "confidence": float(result.intent.confidence),
                         "decision": result.decision, "options": options})
        return pd.DataFrame(rows, columns=["intent", "confidence", "decision", "options"])
