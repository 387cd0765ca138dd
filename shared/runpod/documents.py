"""GraphQL documents of Runpod's control plane. Values always travel as variables, never inside the document."""

SAVE_TEMPLATE = """
mutation SaveTemplate($input: SaveTemplateInput) {
  saveTemplate(input: $input) { id name imageName isServerless env { key value } }
}
"""

DELETE_TEMPLATE = """
mutation DeleteTemplate($templateName: String!) {
  deleteTemplate(templateName: $templateName)
}
"""

SAVE_ENDPOINT = """
mutation SaveEndpoint($input: EndpointInput!) {
  saveEndpoint(input: $input) {
    id name templateId gpuIds idleTimeout scalerType scalerValue workersMin workersMax flashBootType executionTimeoutMs
  }
}
"""

DELETE_ENDPOINT = """
mutation DeleteEndpoint($id: String!) {
  deleteEndpoint(id: $id)
}
"""

MY_RESOURCES = """
query MyResources {
  myself {
    endpoints {
      id name templateId gpuIds idleTimeout scalerType scalerValue workersMin workersMax
      flashBootType executionTimeoutMs
    }
    podTemplates { id name imageName isServerless }
  }
}
"""

GPU_TYPES = """
query GpuTypes {
  gpuTypes { id displayName memoryInGb secureCloud communityCloud }
}
"""
