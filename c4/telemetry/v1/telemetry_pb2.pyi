from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Gpu(_message.Message):
    __slots__ = ("index", "uuid", "pci_bus_id", "name", "memory_total_bytes")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    PCI_BUS_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    index: int
    uuid: str
    pci_bus_id: str
    name: str
    memory_total_bytes: int
    def __init__(self, index: _Optional[int] = ..., uuid: _Optional[str] = ..., pci_bus_id: _Optional[str] = ..., name: _Optional[str] = ..., memory_total_bytes: _Optional[int] = ...) -> None: ...

class NicPort(_message.Message):
    __slots__ = ("device", "port", "netdev", "rate_bps", "link_layer")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    NETDEV_FIELD_NUMBER: _ClassVar[int]
    RATE_BPS_FIELD_NUMBER: _ClassVar[int]
    LINK_LAYER_FIELD_NUMBER: _ClassVar[int]
    device: str
    port: int
    netdev: str
    rate_bps: int
    link_layer: str
    def __init__(self, device: _Optional[str] = ..., port: _Optional[int] = ..., netdev: _Optional[str] = ..., rate_bps: _Optional[int] = ..., link_layer: _Optional[str] = ...) -> None: ...

class HelloRequest(_message.Message):
    __slots__ = ("agent_id", "hostname", "agent_version", "gpus", "nics", "job", "labels", "table_versions", "spool_epoch")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class TableVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    NICS_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TABLE_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    SPOOL_EPOCH_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    hostname: str
    agent_version: str
    gpus: _containers.RepeatedCompositeFieldContainer[Gpu]
    nics: _containers.RepeatedCompositeFieldContainer[NicPort]
    job: str
    labels: _containers.ScalarMap[str, str]
    table_versions: _containers.ScalarMap[str, int]
    spool_epoch: int
    def __init__(self, agent_id: _Optional[str] = ..., hostname: _Optional[str] = ..., agent_version: _Optional[str] = ..., gpus: _Optional[_Iterable[_Union[Gpu, _Mapping]]] = ..., nics: _Optional[_Iterable[_Union[NicPort, _Mapping]]] = ..., job: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., table_versions: _Optional[_Mapping[str, int]] = ..., spool_epoch: _Optional[int] = ...) -> None: ...

class HelloReply(_message.Message):
    __slots__ = ("last_committed_seq", "collector_version", "max_batch_bytes", "flush_interval_s")
    LAST_COMMITTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    COLLECTOR_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_BYTES_FIELD_NUMBER: _ClassVar[int]
    FLUSH_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    last_committed_seq: int
    collector_version: str
    max_batch_bytes: int
    flush_interval_s: float
    def __init__(self, last_committed_seq: _Optional[int] = ..., collector_version: _Optional[str] = ..., max_batch_bytes: _Optional[int] = ..., flush_interval_s: _Optional[float] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("agent_id", "seq", "table", "schema_version", "arrow_ipc", "spool_epoch")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    SPOOL_EPOCH_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    seq: int
    table: str
    schema_version: int
    arrow_ipc: bytes
    spool_epoch: int
    def __init__(self, agent_id: _Optional[str] = ..., seq: _Optional[int] = ..., table: _Optional[str] = ..., schema_version: _Optional[int] = ..., arrow_ipc: _Optional[bytes] = ..., spool_epoch: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("agent_id", "seq", "code", "message", "duplicate", "rows")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    seq: int
    code: int
    message: str
    duplicate: bool
    rows: int
    def __init__(self, agent_id: _Optional[str] = ..., seq: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., duplicate: _Optional[bool] = ..., rows: _Optional[int] = ...) -> None: ...

class BatchBundle(_message.Message):
    __slots__ = ("batches",)
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    batches: _containers.RepeatedCompositeFieldContainer[Batch]
    def __init__(self, batches: _Optional[_Iterable[_Union[Batch, _Mapping]]] = ...) -> None: ...

class AckBundle(_message.Message):
    __slots__ = ("acks", "flush_interval_s")
    ACKS_FIELD_NUMBER: _ClassVar[int]
    FLUSH_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[Ack]
    flush_interval_s: float
    def __init__(self, acks: _Optional[_Iterable[_Union[Ack, _Mapping]]] = ..., flush_interval_s: _Optional[float] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("sql", "max_rows", "timeout_s")
    SQL_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    sql: str
    max_rows: int
    timeout_s: float
    def __init__(self, sql: _Optional[str] = ..., max_rows: _Optional[int] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class QueryChunk(_message.Message):
    __slots__ = ("arrow_ipc", "truncated")
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    arrow_ipc: bytes
    truncated: bool
    def __init__(self, arrow_ipc: _Optional[bytes] = ..., truncated: _Optional[bool] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsReply(_message.Message):
    __slots__ = ("counters",)
    class CountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    counters: _containers.ScalarMap[str, int]
    def __init__(self, counters: _Optional[_Mapping[str, int]] = ...) -> None: ...

class FaultUpdate(_message.Message):
    __slots__ = ("fault_id", "state", "by", "note")
    FAULT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    fault_id: str
    state: str
    by: str
    note: str
    def __init__(self, fault_id: _Optional[str] = ..., state: _Optional[str] = ..., by: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class FaultUpdateReply(_message.Message):
    __slots__ = ("fault_id", "previous_state", "state")
    FAULT_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    fault_id: str
    previous_state: str
    state: str
    def __init__(self, fault_id: _Optional[str] = ..., previous_state: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class HoldRequest(_message.Message):
    __slots__ = ("scope", "job", "hold", "by", "note")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    HOLD_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    scope: str
    job: str
    hold: bool
    by: str
    note: str
    def __init__(self, scope: _Optional[str] = ..., job: _Optional[str] = ..., hold: _Optional[bool] = ..., by: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class RemediationHold(_message.Message):
    __slots__ = ("scope", "job", "source", "by", "note", "since_unix_s")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    scope: str
    job: str
    source: str
    by: str
    note: str
    since_unix_s: float
    def __init__(self, scope: _Optional[str] = ..., job: _Optional[str] = ..., source: _Optional[str] = ..., by: _Optional[str] = ..., note: _Optional[str] = ..., since_unix_s: _Optional[float] = ...) -> None: ...

class HoldsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HoldReply(_message.Message):
    __slots__ = ("holds", "changed", "message", "resumed_steps")
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESUMED_STEPS_FIELD_NUMBER: _ClassVar[int]
    holds: _containers.RepeatedCompositeFieldContainer[RemediationHold]
    changed: bool
    message: str
    resumed_steps: int
    def __init__(self, holds: _Optional[_Iterable[_Union[RemediationHold, _Mapping]]] = ..., changed: _Optional[bool] = ..., message: _Optional[str] = ..., resumed_steps: _Optional[int] = ...) -> None: ...

class GroupedTable(_message.Message):
    __slots__ = ("table", "arrow_ipc")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    table: str
    arrow_ipc: bytes
    def __init__(self, table: _Optional[str] = ..., arrow_ipc: _Optional[bytes] = ...) -> None: ...

class GroupEntry(_message.Message):
    __slots__ = ("agent_id", "seq", "table_index", "rows", "stream", "spool_epoch")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TABLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    SPOOL_EPOCH_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    seq: int
    table_index: int
    rows: int
    stream: int
    spool_epoch: int
    def __init__(self, agent_id: _Optional[str] = ..., seq: _Optional[int] = ..., table_index: _Optional[int] = ..., rows: _Optional[int] = ..., stream: _Optional[int] = ..., spool_epoch: _Optional[int] = ...) -> None: ...

class CommitGroup(_message.Message):
    __slots__ = ("tables", "entries", "counters", "process", "flush_lag_s")
    class CountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TABLES_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    FLUSH_LAG_S_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedCompositeFieldContainer[GroupedTable]
    entries: _containers.RepeatedCompositeFieldContainer[GroupEntry]
    counters: _containers.ScalarMap[str, int]
    process: str
    flush_lag_s: float
    def __init__(self, tables: _Optional[_Iterable[_Union[GroupedTable, _Mapping]]] = ..., entries: _Optional[_Iterable[_Union[GroupEntry, _Mapping]]] = ..., counters: _Optional[_Mapping[str, int]] = ..., process: _Optional[str] = ..., flush_lag_s: _Optional[float] = ...) -> None: ...

class EntryResult(_message.Message):
    __slots__ = ("rows", "duplicate", "error", "refused")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    rows: int
    duplicate: bool
    error: str
    refused: bool
    def __init__(self, rows: _Optional[int] = ..., duplicate: _Optional[bool] = ..., error: _Optional[str] = ..., refused: _Optional[bool] = ...) -> None: ...

class CommitReply(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EntryResult]
    def __init__(self, results: _Optional[_Iterable[_Union[EntryResult, _Mapping]]] = ...) -> None: ...
