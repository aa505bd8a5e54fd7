"""The Flower App that ``deepfoundry federate`` submits with ``flwr run`` (components of its ``pyproject.toml``).

``server_app`` runs in the SuperLink's ServerApp process: FedAvg/FedProx over the connected SuperNodes, with
the global model evaluated on the validation split after every round, and the run directory written at the
end (:func:`deepfoundry.responsible.federated.server_main`). ``client_app`` runs in each SuperNode's ClientApp
process: the node's partition (``--node-config 'partition-id=K num-partitions=N'``) trained with the
project's Trainer from the received global weights (:func:`deepfoundry.responsible.federated.client_train`).
The run config (the resolved :class:`~deepfoundry.config.RunConfig` and the federation's shape) comes from
the app's ``[tool.flwr.app.config]``, which :func:`~deepfoundry.responsible.federated.write_app` writes.
"""
from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from .federated import client_train, server_main

server_app = ServerApp()
client_app = ClientApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    server_main(grid, context)


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    return client_train(msg, context)
