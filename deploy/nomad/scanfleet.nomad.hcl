# scanfleet on Nomad (1.5+, docker driver, Nomad native service discovery).
#
#   # 1. scanners.yaml (with ${VAR} references) and the secrets it references, in the
#   #    job's Nomad variable, which only this job's tasks can read:
#   nomad var put -force nomad/jobs/scanfleet \
#       scanners_yaml="$(cat scanners.yaml)" \
#       NESSUS1_ACCESS_KEY=... NESSUS1_SECRET_KEY=... \
#       NESSUS2_ACCESS_KEY=... NESSUS2_SECRET_KEY=... \
#       NESSUS_DMZ_USERNAME=... NESSUS_DMZ_PASSWORD=...
#   # 2. the image built from deploy/Dockerfile, pushed where the clients can pull it:
#   nomad job run -var image=registry.example.com/scanfleet:0.1.0 scanfleet.nomad.hcl
#
# Every item of the variable except scanners_yaml becomes an environment variable of the
# provision, dispatcher and agent tasks, which substitute them into scanners.yaml.
#
# NATS runs with authentication, one user per service (scanfleet.common.nats_auth): the
# nats task's own variable holds the server config and every password; each other task's
# own variable (nomad/jobs/scanfleet/<group>/<task>, readable by that task only) holds its
# password as nats_password:
#   for u in gateway dispatcher agent validator janitor provision admin; do
#     eval "pw_$u=$(openssl rand -hex 32)"; done
#   nomad var put -force nomad/jobs/scanfleet/nats/nats nats_conf=@../compose/nats-server.conf \
#       NATS_GATEWAY_PASSWORD=$pw_gateway NATS_DISPATCHER_PASSWORD=$pw_dispatcher \
#       NATS_AGENT_PASSWORD=$pw_agent NATS_VALIDATOR_PASSWORD=$pw_validator \
#       NATS_JANITOR_PASSWORD=$pw_janitor NATS_PROVISION_PASSWORD=$pw_provision \
#       NATS_ADMIN_PASSWORD=$pw_admin
#   for t in dispatcher/dispatcher agent/agent validator/validator \
#            janitor/janitor dispatcher/provision agent/provision; do
#     u=${t#*/}; eval "pw=\$pw_$u"; nomad var put -force nomad/jobs/scanfleet/$t nats_password=$pw; done
#   # the gateway's variable also holds the clients file (scanfleet clients --file clients.yaml ...):
#   nomad var put -force nomad/jobs/scanfleet/gateway/gateway nats_password=$pw_gateway clients_yaml=@clients.yaml
#
# Layout: one group per process so each restarts, updates and scales on its own.
#   nats        nats-server with JetStream (single node, sticky disk)
#   gateway     MCP (/mcp) and REST (/v1) on the "http" port; checks /ready
#   dispatcher  prestart task `scanfleet provision`, then the dispatcher
#   agent       prestart task `scanfleet provision`, then the agent
#   validator, janitor
# Every scanfleet task finds NATS through the "scanfleet-nats" service registration.
# Environment variable names are the same as in deploy/compose/docker-compose.yml.

variable "image" {
  type        = string
  description = "scanfleet image built from deploy/Dockerfile (docker build -f deploy/Dockerfile .)"
}

variable "nats_image" {
  type        = string
  default     = "nats:2.11-alpine"
  description = "nats-server 2.11 or newer"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "log_level" {
  type    = string
  default = "INFO"
}

variable "agent_count" {
  type        = number
  default     = 1
  description = "Agents all drive every scanner unless SCANFLEET_AGENT_INSTANCES splits them"
}

locals {
  # SCANFLEET_NATS_URL for every scanfleet task, from the nats group's registration.
  nats_url_env = <<-EOT
    {{- range nomadService "scanfleet-nats" }}
    SCANFLEET_NATS_URL=nats://{{ .Address }}:{{ .Port }}
    {{- end }}
  EOT

  # Every item of nomad/jobs/scanfleet except the file itself, as KEY="value".
  secrets_env = <<-EOT
    {{- with nomadVar "nomad/jobs/scanfleet" }}
    {{- range $k, $v := . }}{{ if ne $k "scanners_yaml" }}
    {{ $k }}={{ printf "%q" (print $v) }}
    {{- end }}{{ end }}
    {{- end }}
  EOT

  scanners_yaml = <<-EOT
    {{- with nomadVar "nomad/jobs/scanfleet" }}{{ .scanners_yaml }}{{ end }}
  EOT

  # nats-server.conf (deploy/compose/nats-server.conf) and the passwords it reads from its
  # environment, from the nats task's own variable.
  nats_conf = <<-EOT
    {{- with nomadVar "nomad/jobs/scanfleet/nats/nats" }}{{ .nats_conf }}{{ end }}
  EOT

  nats_passwords_env = <<-EOT
    {{- with nomadVar "nomad/jobs/scanfleet/nats/nats" }}
    {{- range $k, $v := . }}{{ if ne $k "nats_conf" }}
    {{ $k }}={{ printf "%q" (print $v) }}
    {{- end }}{{ end }}
    {{- end }}
  EOT

  # SCANFLEET_NATS_PASSWORD of one task, from that task's own variable.
  nats_password_env = <<-EOT
    {{- with nomadVar (printf "nomad/jobs/scanfleet/%s/%s" (env "NOMAD_GROUP_NAME") (env "NOMAD_TASK_NAME")) }}
    SCANFLEET_NATS_PASSWORD={{ printf "%q" (print .nats_password) }}
    {{- end }}
  EOT
}

job "scanfleet" {
  type        = "service"
  datacenters = var.datacenters

  update {
    max_parallel      = 1
    min_healthy_time  = "10s"
    healthy_deadline  = "3m"
    progress_deadline = "10m"
    auto_revert       = true
  }

  # --- NATS JetStream -------------------------------------------------------------------
  group "nats" {
    count = 1

    network {
      port "client" { to = 4222 }
    }

    # JetStream's store survives restarts and updates on the same node (sticky) and is
    # copied when the allocation moves (migrate). For durable storage across node loss,
    # use a host volume instead (volume "nats" { type = "host" source = "..." }) and
    # mount it at /data with a volume_mount block.
    ephemeral_disk {
      size    = 2048
      sticky  = true
      migrate = true
    }

    restart {
      attempts = 10
      interval = "30m"
      delay    = "10s"
      mode     = "delay"
    }

    service {
      name     = "scanfleet-nats"
      provider = "nomad"
      port     = "client"

      # Monitoring listens on the container's loopback only, so the check is a TCP one.
      check {
        name     = "client"
        type     = "tcp"
        port     = "client"
        interval = "10s"
        timeout  = "3s"
      }
    }

    task "nats" {
      driver = "docker"

      config {
        image = var.nats_image
        ports = ["client"]
        args  = ["-c", "/local/nats-server.conf", "-sd", "/alloc/data/jetstream"]
      }

      template {
        data        = local.nats_conf
        destination = "local/nats-server.conf"
        change_mode = "restart"
      }

      template {
        data        = local.nats_passwords_env
        destination = "secrets/nats.env"
        env         = true
        change_mode = "restart"
      }

      resources {
        cpu    = 300
        memory = 512
      }
    }
  }

  # --- gateway --------------------------------------------------------------------------
  group "gateway" {
    count = 1

    network {
      # A dynamic host port mapped to 8080 in the container. To expose the gateway
      # beyond the cluster, put an authenticating reverse proxy in front of the
      # "scanfleet-gateway" service rather than publishing this port.
      port "http" { to = 8080 }
    }

    restart {
      attempts = 5
      interval = "10m"
      delay    = "10s"
      mode     = "delay"
    }

    service {
      name     = "scanfleet-gateway"
      provider = "nomad"
      port     = "http"

      check {
        name     = "ready"
        type     = "http"
        path     = "/ready"
        interval = "10s"
        timeout  = "3s"
      }
    }

    task "gateway" {
      driver = "docker"

      config {
        image = var.image
        args  = ["gateway"]
        ports = ["http"]
      }

      env {
        SCANFLEET_NATS_USER     = "gateway"
        SCANFLEET_GATEWAY_HOST  = "0.0.0.0"
        SCANFLEET_GATEWAY_PORT  = "8080"
        SCANFLEET_LOG_LEVEL     = var.log_level
        SCANFLEET_CLIENTS_FILE  = "/secrets/clients.yaml"
      }

      # Roles, scopes and token hashes; the gateway re-reads the file when Nomad rewrites it,
      # so a revoked token stops working without a restart.
      template {
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/scanfleet/gateway/gateway" }}{{ .clients_yaml }}{{ end }}
        EOT
        destination = "secrets/clients.yaml"
        perms       = "0600"
        change_mode = "noop"
      }

      template {
        data        = local.nats_url_env
        destination = "local/nats.env"
        env         = true
        change_mode = "restart"
      }

      template {
        data        = local.nats_password_env
        destination = "secrets/nats-user.env"
        env         = true
        change_mode = "restart"
      }

      resources {
        cpu    = 300
        memory = 256
      }
    }
  }

  # --- dispatcher (and provision) -------------------------------------------------------
  group "dispatcher" {
    count = 1

    network {
      # /health, /ready and /metrics (SCANFLEET_SERVICE_PORT); Prometheus finds it by the "metrics" tag.
      port "ops" { to = 8081 }
    }

    service {
      name     = "scanfleet-dispatcher"
      provider = "nomad"
      port     = "ops"
      tags     = ["metrics"]

      check {
        name     = "ready"
        type     = "http"
        path     = "/ready"
        interval = "10s"
        timeout  = "3s"
      }
    }

    restart {
      attempts = 5
      interval = "10m"
      delay    = "10s"
      mode     = "delay"
    }

    # Streams, buckets, consumers and the scanner registry, before the dispatcher starts.
    # Idempotent, so it is also safe in the agent group.
    task "provision" {
      driver = "docker"

      lifecycle {
        hook    = "prestart"
        sidecar = false
      }

      config {
        image = var.image
        args  = ["provision"]
      }

      env {
        SCANFLEET_NATS_USER     = "provision"
        SCANFLEET_SCANNERS_FILE = "/local/scanners.yaml" # the task dir, as the container sees it
        SCANFLEET_LOG_LEVEL     = var.log_level
      }

      template {
        data        = local.scanners_yaml
        destination = "local/scanners.yaml"
        change_mode = "noop"
      }

      template {
        data        = local.secrets_env
        destination = "secrets/nessus.env"
        env         = true
        change_mode = "noop"
      }

      template {
        data        = local.nats_url_env
        destination = "local/nats.env"
        env         = true
        change_mode = "noop"
      }

      template {
        data        = local.nats_password_env
        destination = "secrets/nats-user.env"
        env         = true
        change_mode = "noop"
      }

      resources {
        cpu    = 200
        memory = 128
      }
    }

    task "dispatcher" {
      driver = "docker"

      config {
        image = var.image
        args  = ["dispatcher"]
        ports = ["ops"]
      }

      env {
        SCANFLEET_NATS_USER     = "dispatcher"
        SCANFLEET_SERVICE_HOST = "0.0.0.0"
        SCANFLEET_SERVICE_PORT = "8081"
        SCANFLEET_SCANNERS_FILE = "/local/scanners.yaml" # the task dir, as the container sees it
        SCANFLEET_LOG_LEVEL     = var.log_level
      }

      # A changed scanners.yaml restarts the dispatcher, which re-syncs the registry.
      template {
        data        = local.scanners_yaml
        destination = "local/scanners.yaml"
        change_mode = "restart"
      }

      template {
        data        = local.secrets_env
        destination = "secrets/nessus.env"
        env         = true
        change_mode = "restart"
      }

      template {
        data        = local.nats_url_env
        destination = "local/nats.env"
        env         = true
        change_mode = "restart"
      }

      template {
        data        = local.nats_password_env
        destination = "secrets/nats-user.env"
        env         = true
        change_mode = "restart"
      }

      resources {
        cpu    = 200
        memory = 256
      }
    }
  }

  # --- agent (and provision) ------------------------------------------------------------
  group "agent" {
    count = var.agent_count

    network {
      # /health, /ready and /metrics (SCANFLEET_SERVICE_PORT); Prometheus finds it by the "metrics" tag.
      port "ops" { to = 8081 }
    }

    service {
      name     = "scanfleet-agent"
      provider = "nomad"
      port     = "ops"
      tags     = ["metrics"]

      check {
        name     = "ready"
        type     = "http"
        path     = "/ready"
        interval = "10s"
        timeout  = "3s"
      }
    }

    restart {
      attempts = 5
      interval = "10m"
      delay    = "10s"
      mode     = "delay"
    }

    task "provision" {
      driver = "docker"

      lifecycle {
        hook    = "prestart"
        sidecar = false
      }

      config {
        image = var.image
        args  = ["provision"]
      }

      env {
        SCANFLEET_NATS_USER     = "provision"
        SCANFLEET_SCANNERS_FILE = "/local/scanners.yaml" # the task dir, as the container sees it
        SCANFLEET_LOG_LEVEL     = var.log_level
      }

      template {
        data        = local.scanners_yaml
        destination = "local/scanners.yaml"
        change_mode = "noop"
      }

      template {
        data        = local.secrets_env
        destination = "secrets/nessus.env"
        env         = true
        change_mode = "noop"
      }

      template {
        data        = local.nats_url_env
        destination = "local/nats.env"
        env         = true
        change_mode = "noop"
      }

      template {
        data        = local.nats_password_env
        destination = "secrets/nats-user.env"
        env         = true
        change_mode = "noop"
      }

      resources {
        cpu    = 200
        memory = 128
      }
    }

    task "agent" {
      driver = "docker"

      config {
        image = var.image
        args  = ["agent"]
        ports = ["ops"]
        # CA bundles named by ca_bundle: in scanners.yaml can be delivered with one more
        # template (destination "local/ca/dmz-ca.pem") and referenced as
        # /local/ca/dmz-ca.pem, the path of NOMAD_TASK_DIR inside the container.
      }

      env {
        SCANFLEET_NATS_USER     = "agent"
        SCANFLEET_SERVICE_HOST = "0.0.0.0"
        SCANFLEET_SERVICE_PORT = "8081"
        SCANFLEET_SCANNERS_FILE = "/local/scanners.yaml" # the task dir, as the container sees it
        SCANFLEET_LOG_LEVEL     = var.log_level
        # SCANFLEET_AGENT_INSTANCES = "default/nessus-1,default/nessus-2"
      }

      template {
        data        = local.scanners_yaml
        destination = "local/scanners.yaml"
        change_mode = "restart"
      }

      template {
        data        = local.secrets_env
        destination = "secrets/nessus.env"
        env         = true
        change_mode = "restart"
      }

      template {
        data        = local.nats_url_env
        destination = "local/nats.env"
        env         = true
        change_mode = "restart"
      }

      template {
        data        = local.nats_password_env
        destination = "secrets/nats-user.env"
        env         = true
        change_mode = "restart"
      }

      resources {
        cpu    = 300
        memory = 256
      }
    }
  }

  # --- validator ------------------------------------------------------------------------
  group "validator" {
    count = 1

    network {
      # /health, /ready and /metrics (SCANFLEET_SERVICE_PORT); Prometheus finds it by the "metrics" tag.
      port "ops" { to = 8081 }
    }

    service {
      name     = "scanfleet-validator"
      provider = "nomad"
      port     = "ops"
      tags     = ["metrics"]

      check {
        name     = "ready"
        type     = "http"
        path     = "/ready"
        interval = "10s"
        timeout  = "3s"
      }
    }

    restart {
      attempts = 5
      interval = "10m"
      delay    = "10s"
      mode     = "delay"
    }

    task "validator" {
      driver = "docker"

      config {
        image = var.image
        args  = ["validator"]
        ports = ["ops"]
      }

      env {
        SCANFLEET_NATS_USER     = "validator"
        SCANFLEET_SERVICE_HOST = "0.0.0.0"
        SCANFLEET_SERVICE_PORT = "8081"
        SCANFLEET_LOG_LEVEL = var.log_level
      }

      template {
        data        = local.nats_url_env
        destination = "local/nats.env"
        env         = true
        change_mode = "restart"
      }

      template {
        data        = local.nats_password_env
        destination = "secrets/nats-user.env"
        env         = true
        change_mode = "restart"
      }

      resources {
        cpu    = 300
        memory = 512
      }
    }
  }

  # --- janitor --------------------------------------------------------------------------
  group "janitor" {
    count = 1

    network {
      # /health, /ready and /metrics (SCANFLEET_SERVICE_PORT); Prometheus finds it by the "metrics" tag.
      port "ops" { to = 8081 }
    }

    service {
      name     = "scanfleet-janitor"
      provider = "nomad"
      port     = "ops"
      tags     = ["metrics"]

      check {
        name     = "ready"
        type     = "http"
        path     = "/ready"
        interval = "10s"
        timeout  = "3s"
      }
    }

    restart {
      attempts = 5
      interval = "10m"
      delay    = "10s"
      mode     = "delay"
    }

    task "janitor" {
      driver = "docker"

      config {
        image = var.image
        args  = ["janitor"]
        ports = ["ops"]
      }

      env {
        SCANFLEET_NATS_USER     = "janitor"
        SCANFLEET_SERVICE_HOST = "0.0.0.0"
        SCANFLEET_SERVICE_PORT = "8081"
        SCANFLEET_LOG_LEVEL = var.log_level
      }

      template {
        data        = local.nats_url_env
        destination = "local/nats.env"
        env         = true
        change_mode = "restart"
      }

      template {
        data        = local.nats_password_env
        destination = "secrets/nats-user.env"
        env         = true
        change_mode = "restart"
      }

      resources {
        cpu    = 100
        memory = 128
      }
    }
  }
}
