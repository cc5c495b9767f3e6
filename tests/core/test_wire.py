"""The committed generated gRPC code is exactly what the pinned compiler makes from the .proto."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATED = ["telemetry_pb2.py", "telemetry_pb2.pyi", "telemetry_pb2_grpc.py"]


def test_generated_code_matches_proto(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{REPO}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            "c4/telemetry/v1/telemetry.proto",
        ],
        check=True,
        cwd=REPO,
    )
    for name in GENERATED:
        fresh = (tmp_path / "c4/telemetry/v1" / name).read_text()
        committed = (REPO / "c4/telemetry/v1" / name).read_text()
        assert fresh == committed, (
            f"c4/telemetry/v1/{name} differs from the .proto: regenerate with `make proto`"
        )


def test_package_and_service_names():
    from c4.telemetry.v1 import telemetry_pb2 as pb

    assert pb.DESCRIPTOR.package == "c4.telemetry.v1"
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["Telemetry"].methods}
    assert {"Hello", "Push", "Query", "Stats"} <= methods
