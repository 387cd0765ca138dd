"""The subset of Runpod's GraphQL schema the simulator serves, executed by graphql-core.

Real GraphQL execution means variables, aliases, fragments and selection sets behave as against api.runpod.io;
type and field names are Runpod's.
"""

from __future__ import annotations

from typing import Any

from graphql import ExecutionResult, GraphQLResolveInfo, GraphQLScalarType, build_schema, graphql_sync

from simulators.runpod.catalog import GPU_TYPES, GPU_TYPES_BY_ID, GpuType
from simulators.runpod.core import RunpodSimulator
from simulators.runpod.model import Account

SDL = """
scalar Void

enum FlashBootType { OFF FLASHBOOT }

type EnvironmentVariable { key: String value: String }
input EnvironmentVariableInput { key: String! value: String }

type PodTemplate {
  id: String
  name: String
  imageName: String
  dockerArgs: String
  containerDiskInGb: Int
  volumeInGb: Int
  volumeMountPath: String
  ports: String
  env: [EnvironmentVariable]
  isServerless: Boolean
  startSsh: Boolean
  startJupyter: Boolean
  isPublic: Boolean
  readme: String
  containerRegistryAuthId: String
}

input SaveTemplateInput {
  id: String
  name: String
  imageName: String
  dockerArgs: String
  containerDiskInGb: Int
  volumeInGb: Int
  volumeMountPath: String
  ports: String
  env: [EnvironmentVariableInput]
  isServerless: Boolean
  startSsh: Boolean
  startJupyter: Boolean
  isPublic: Boolean
  readme: String
  containerRegistryAuthId: String
}

type NetworkVolume { id: String name: String size: Int dataCenterId: String }

type Endpoint {
  id: String
  name: String
  templateId: String
  template: PodTemplate
  gpuIds: String
  networkVolumeId: String
  networkVolume: NetworkVolume
  locations: String
  idleTimeout: Int
  scalerType: String
  scalerValue: Int
  workersMin: Int
  workersMax: Int
  workersStandby: Int
  gpuCount: Int
  flashBootType: FlashBootType
  executionTimeoutMs: Int
  allowedCudaVersions: String
  aiKey: String
  type: String
  userId: String
  version: Int
  createdAt: String
  env: [EnvironmentVariable]
}

input EndpointInput {
  id: String
  name: String
  templateId: String
  gpuIds: String
  networkVolumeId: String
  locations: String
  idleTimeout: Int
  scalerType: String
  scalerValue: Int
  workersMin: Int
  workersMax: Int
  gpuCount: Int
  flashBootType: FlashBootType
  executionTimeoutMs: Int
  allowedCudaVersions: String
}

type User {
  id: String
  email: String
  endpoints: [Endpoint]
  podTemplates: [PodTemplate]
  networkVolumes: [NetworkVolume]
}

input GpuTypeFilter { id: String ids: [String] }
input GpuLowestPriceInput { gpuCount: Int secureCloud: Boolean }

type LowestPrice {
  gpuName: String
  gpuTypeId: String
  minimumBidPrice: Float
  uninterruptablePrice: Float
  stockStatus: String
}

type GpuType {
  id: String
  displayName: String
  manufacturer: String
  memoryInGb: Int
  cudaCores: Int
  maxGpuCount: Int
  secureCloud: Boolean
  communityCloud: Boolean
  securePrice: Float
  communityPrice: Float
  secureSpotPrice: Float
  communitySpotPrice: Float
  oneWeekPrice: Float
  oneMonthPrice: Float
  threeMonthPrice: Float
  lowestPrice(input: GpuLowestPriceInput): LowestPrice
}

type Query {
  myself: User
  gpuTypes(input: GpuTypeFilter): [GpuType]
}

type Mutation {
  saveTemplate(input: SaveTemplateInput): PodTemplate
  deleteTemplate(templateName: String): Void
  saveEndpoint(input: EndpointInput): Endpoint
  deleteEndpoint(id: String): Void
}
"""


class RunpodSchema:
    """The executable schema, bound to one simulator."""

    def __init__(self, sim: RunpodSimulator) -> None:
        self._sim = sim
        self._schema = build_schema(SDL)
        void = self._schema.type_map["Void"]
        assert isinstance(void, GraphQLScalarType)
        void.serialize = _serialize_void  # type: ignore[method-assign]
        resolvers = {
            ("Query", "myself"): self._myself,
            ("Query", "gpuTypes"): self._gpu_types,
            ("Mutation", "saveTemplate"): self._save_template,
            ("Mutation", "deleteTemplate"): self._delete_template,
            ("Mutation", "saveEndpoint"): self._save_endpoint,
            ("Mutation", "deleteEndpoint"): self._delete_endpoint,
            ("GpuType", "lowestPrice"): _lowest_price,
        }
        for (type_name, field_name), resolver in resolvers.items():
            graphql_type = self._schema.get_type(type_name)
            graphql_type.fields[field_name].resolve = resolver  # type: ignore[union-attr]

    def execute(
        self, account: Account, query: str, variables: dict[str, Any] | None, operation_name: str | None
    ) -> ExecutionResult:
        """Run one GraphQL document as ``account``."""
        return graphql_sync(
            self._schema,
            query,
            context_value=account,
            variable_values=variables,
            operation_name=operation_name,
        )

    def _myself(self, _root: Any, info: GraphQLResolveInfo) -> dict[str, Any]:
        account: Account = info.context
        return {
            "id": account.id,
            "email": account.email,
            "endpoints": self._sim.endpoints_of(account),
            "podTemplates": self._sim.templates_of(account),
            "networkVolumes": [],
        }

    def _gpu_types(self, _root: Any, _info: GraphQLResolveInfo, input: dict[str, Any] | None = None) -> list[Any]:
        wanted = set((input or {}).get("ids") or [])
        if (input or {}).get("id"):
            wanted.add(input["id"])  # type: ignore[index]
        return [_gpu_type_view(gpu) for gpu in GPU_TYPES if not wanted or gpu.id in wanted]

    def _save_template(self, _root: Any, info: GraphQLResolveInfo, input: dict[str, Any]) -> dict[str, Any]:
        return self._sim.save_template(info.context, input)

    def _delete_template(self, _root: Any, info: GraphQLResolveInfo, templateName: str) -> None:
        self._sim.delete_template(info.context, templateName)

    def _save_endpoint(self, _root: Any, info: GraphQLResolveInfo, input: dict[str, Any]) -> dict[str, Any]:
        return self._sim.save_endpoint(info.context, input)

    def _delete_endpoint(self, _root: Any, info: GraphQLResolveInfo, id: str) -> None:
        self._sim.delete_endpoint(info.context, id)


def _serialize_void(value: Any) -> Any:
    return None


def _gpu_type_view(gpu: GpuType) -> dict[str, Any]:
    return {
        "id": gpu.id,
        "displayName": gpu.display_name,
        "manufacturer": gpu.manufacturer,
        "memoryInGb": gpu.memory_in_gb,
        "cudaCores": None,
        "maxGpuCount": gpu.max_gpu_count,
        "secureCloud": True,
        "communityCloud": gpu.community_cloud,
        "securePrice": gpu.secure_usd_per_hour,
        "communityPrice": gpu.community_usd_per_hour,
        "secureSpotPrice": gpu.spot_usd_per_hour,
        "communitySpotPrice": gpu.spot_usd_per_hour if gpu.community_cloud else None,
        "oneWeekPrice": None,
        "oneMonthPrice": None,
        "threeMonthPrice": None,
    }


def _lowest_price(parent: dict[str, Any], _info: GraphQLResolveInfo, input: dict[str, Any] | None = None) -> Any:
    gpu = GPU_TYPES_BY_ID[parent["id"]]
    count = (input or {}).get("gpuCount") or 1
    if count > gpu.max_gpu_count:
        return None
    hourly = gpu.secure_usd_per_hour if (input or {}).get("secureCloud") else gpu.lowest_usd_per_hour
    return {
        "gpuName": gpu.display_name,
        "gpuTypeId": gpu.id,
        "minimumBidPrice": round(gpu.spot_usd_per_hour * count, 2),
        "uninterruptablePrice": round(hourly * count, 2),
        "stockStatus": "High",
    }
