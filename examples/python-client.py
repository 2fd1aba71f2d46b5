#!/usr/bin/env python3
"""A Python client of openclaw-supervisord's gRPC API, with default grpcio channel options.

    python3 examples/python-client.py /run/openclaw-supervisor/supervisor.sock           # status
    python3 examples/python-client.py /run/openclaw-supervisor/supervisor.sock rescue    # restart rescue

It needs grpcio, grpcio-tools, grpcio-reflection and grpcio-health-checking
(`python3 -m pip install grpcio grpcio-tools grpcio-reflection grpcio-health-checking`). The
stubs are generated from proto/openclaw/supervisor/v1/supervisor.proto into a temp dir at each
run with grpc_tools.protoc; in your own scripts generate them once and import them.

It first asks the health service, then lists the services by reflection (both v1alpha and v1),
then lists the instances; with a name it restarts that instance and prints the pid before and
after. Each step prints one line a test can read; any failure exits 1 with the gRPC error.
"""

import os
import subprocess
import sys
import tempfile

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2 as alpha_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc as alpha_pb2_grpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_DIR = os.path.join(ROOT, "proto")
PROTO = "openclaw/supervisor/v1/supervisor.proto"


def stubs(out):
    """Generates the supervisor's Python stubs into `out` and imports them."""
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", PROTO_DIR,
         "--python_out", out, "--grpc_python_out", out, PROTO],
        check=True,
    )
    sys.path.insert(0, out)
    from openclaw.supervisor.v1 import supervisor_pb2, supervisor_pb2_grpc
    return supervisor_pb2, supervisor_pb2_grpc


def services_v1alpha(channel):
    stub = alpha_pb2_grpc.ServerReflectionStub(channel)
    req = alpha_pb2.ServerReflectionRequest(list_services="")
    for resp in stub.ServerReflectionInfo(iter([req])):
        return sorted(s.name for s in resp.list_services_response.service)
    return []


def services_v1(channel):
    # grpcio-reflection has only the v1alpha module; the v1 messages are the same, only the
    # service's name differs, so the v1 call is made with them by its method path.
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=alpha_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=alpha_pb2.ServerReflectionResponse.FromString,
    )
    for resp in call(iter([alpha_pb2.ServerReflectionRequest(list_services="")])):
        return sorted(s.name for s in resp.list_services_response.service)
    return []


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: python-client.py SOCKET [INSTANCE-TO-RESTART]")
    socket = os.path.abspath(sys.argv[1])
    restart = sys.argv[2] if len(sys.argv) > 2 else None
    with tempfile.TemporaryDirectory() as tmp:
        pb, pb_grpc = stubs(tmp)
        # The channel as grpcio's docs write it: no options.
        with grpc.insecure_channel("unix://" + socket) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            h = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
            print("health:", health_pb2.HealthCheckResponse.ServingStatus.Name(h.status))
            print("reflection v1alpha:", " ".join(services_v1alpha(channel)))
            print("reflection v1:", " ".join(services_v1(channel)))
            sup = pb_grpc.SupervisorServiceStub(channel)
            listed = sup.ListInstances(pb.ListInstancesRequest(), timeout=30)
            for i in listed.instances:
                print("instance:", i.name, pb.InstanceState.Name(i.state), "pid", i.pid)
            if restart:
                before = [i.pid for i in listed.instances if i.name == restart]
                after = sup.RestartInstance(pb.RestartInstanceRequest(name=restart), timeout=120)
                print("restarted:", restart, "pid", before[0] if before else 0, "->", after.pid)


if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as e:
        sys.exit(f"gRPC error: {e.code().name}: {e.details()}")
