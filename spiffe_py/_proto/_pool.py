"""Private descriptor pool for the generated SPIFFE protobuf modules.

workload.proto has no package, so its message names are global. Registering
them in protobuf's default pool would clash with any other library that ships
the same file (py-spiffe does), so our generated code uses this pool instead.
"""

from google.protobuf import descriptor_pool, struct_pb2

POOL = descriptor_pool.DescriptorPool()
POOL.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
