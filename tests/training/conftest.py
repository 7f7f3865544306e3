"""Fixtures the training tests share."""

import mlflow
import pytest

from rlops_plugin import flavor


@pytest.fixture
def champion(tracking, model_name, cartpole_bundle):
    """The CartPole bundle registered as version 1 @champion."""
    with mlflow.start_run():
        flavor.log_model(cartpole_bundle, name="policy", registered_model_name=model_name)
    flavor.promote(model_name, 1)
    return f"models:/{model_name}@champion"
