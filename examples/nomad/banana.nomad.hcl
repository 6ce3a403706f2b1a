# The Nomad target of examples/servicebuild-nomad.yaml.
#
# monoship changes exactly one thing here: task "server" config.image, to
# registry.example.com/shop/banana-nomad@sha256:..., and only when the digest changed.
# Keep commit ids out of `meta` and out of the image tag: any change there is a new job
# version and a rollout, even when the image bytes are the same.
job "banana" {
  datacenters = ["dc1"]
  type        = "service"

  update {
    max_parallel     = 1
    health_check     = "checks"
    min_healthy_time = "10s"
    auto_revert      = true
  }

  group "web" {
    count = 2

    network {
      port "http" {
        to = 8080
      }
    }

    service {
      name     = "banana"
      port     = "http"
      provider = "nomad"

      check {
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "server" {
      driver = "docker"

      config {
        # The first value only; monoship pins it to a digest on promotion.
        image = "registry.example.com/shop/banana-nomad:latest"
        ports = ["http"]

        auth {
          username = "example-user"        # FAKE placeholder
          password = "not-a-real-password" # FAKE placeholder
        }
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
