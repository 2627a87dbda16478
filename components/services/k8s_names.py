"""Names shared by the components that create Kubernetes objects and by job rendering.

Changing one of these renames live objects or stops pods from matching nodes: treat them as an
interface (README migration note + `aliases` where a logical name changes).
"""

POOL_LABEL = "trainyard.io/pool"
"""Node label: the GPU pool's name."""
GPU_MODEL_LABEL = "trainyard.io/gpu"
"""Node label: accelerator model from the catalog, e.g. `A100-40GB`."""
ACCELERATOR_LABEL = "trainyard.io/accelerator"
"""Node label: `nvidia` or `neuron`."""
EFA_LABEL = "trainyard.io/efa"
PURPOSE_LABEL = "trainyard.io/purpose"
"""On the nodes of pools whose purpose is not training (`inference`): Kueue and the training
runtimes leave them to the serving layer. Absent on training pools."""
"""Node label: `"true"` on nodes whose launch template attaches EFA interfaces."""
CAPACITY_LABEL = "eks.amazonaws.com/capacityType"
"""Set by EKS on managed nodes: ON_DEMAND, SPOT or CAPACITY_BLOCK."""

GPU_TAINT_KEY = {"nvidia": "nvidia.com/gpu", "neuron": "aws.amazon.com/neuron"}
"""Taint key per accelerator vendor (value `true`, effect NoSchedule)."""
GPU_RESOURCE = {"nvidia": "nvidia.com/gpu", "neuron": "aws.amazon.com/neuron"}
EFA_RESOURCE = "vpc.amazonaws.com/efa"
HUGEPAGES_RESOURCE = "hugepages-2Mi"
EFA_HUGEPAGES = "5120Mi"
"""EFA instances pre-allocate 5128 x 2 MiB huge pages; pods request 5120Mi."""

TRAINING_SERVICE_ACCOUNT = "trainer"
"""Service account in every team namespace, bound to the training Pod Identity role."""
SHARED_CLAIM = "shared-efs"
"""ReadWriteMany claim on EFS in every team namespace."""
FSX_CLAIM = "fsx-lustre"
"""Claim on FSx for Lustre in every team namespace (stacks with FSx enabled)."""

SYSTEM_NAMESPACES = {
    "monitoring": "monitoring",
    "kubeflow": "kubeflow-system",
    "device_plugins": "kube-system",
}

# -- elastic capacity and queueing (Karpenter, Kueue) ----------------------------------------
PROVISIONERS = ("managed", "karpenter")
"""Who makes a pool's nodes: an EKS managed node group, or a Karpenter NodePool. Nodes carry the
same labels and taints either way, so nothing above the pool cares which."""
KARPENTER_NODEPOOL_LABEL = "karpenter.sh/nodepool"
"""Set by Karpenter on its nodes: the NodePool's name (= the trainyard pool's name)."""
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
"""Pod annotation ("true"): Karpenter never voluntarily disrupts (consolidates, drifts) the node
under a running training pod; involuntary disruption (Spot interruption) still drains it."""
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
"""TrainJob label naming the LocalQueue in its namespace that admits it."""
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
"""TrainJob label naming a Kueue WorkloadPriorityClass."""
LOCAL_QUEUE = "gpu"
"""The LocalQueue in every team namespace; it points at the team's ClusterQueue (named like the
team) in the platform's one cohort."""
COHORT = "trainyard"
"""The Kueue cohort every team ClusterQueue joins, so idle quota is borrowed and reclaimed."""
PRIORITY_CLASSES = {"production": 1000, "training": 100, "preemptible": 10}
"""Kueue WorkloadPriorityClass name -> value. `training` is the default of rendered jobs."""
DEFAULT_PRIORITY = "training"
SPOT_NOTICE_SECONDS = 120
"""EC2's Spot interruption notice: the whole budget for SIGTERM -> save -> exit."""
