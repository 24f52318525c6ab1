"""Disaggregated serving across processes (and hosts): a coordinator running the serving
schedulers on the wall clock, one worker process per device, control messages over a TCPStore
and KV blocks over ``torch.distributed`` send/recv (gloo or NCCL). See docs/DISAGG.md.

    launch       start, watch and stop the worker processes (torch.multiprocessing or torchrun)
    coordinator  the Cluster's schedulers driving remote workers; KV transfers with back-pressure
    worker       a worker process: ModelExecutor + the KV sends and receives
    kvwire       what a transfer sends (per layer or per block) and how it lands
    mailbox      the store's inboxes and heartbeats
    linkbench    the backend's own send/recv and all-gather bandwidth
    serve        ``pdlab serve-disagg``
"""
