# Bakes the liveload agent AMI: Debian 12, chromium-headless-shell, fonts, the agent, and a
# systemd unit that the instance's user data starts (see README.md next to this file).
#
#   cargo build --release --locked -p liveload-agent
#   packer init images/ec2
#   packer build -var region=us-east-1 images/ec2
#
# The AMI id is printed at the end (and written to images/ec2/manifest.json).

packer {
  required_plugins {
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "arch" {
  type        = string
  default     = "amd64"
  description = "amd64 (x86_64 instance types) or arm64 (Graviton; build the agent for aarch64)"
}

variable "agent_binary" {
  type        = string
  default     = "target/release/liveload-agent"
  description = "the liveload-agent executable for var.arch, relative to the repository root"
}

variable "builder_instance_type" {
  type    = string
  default = "t3.small"
}

locals {
  stamp = formatdate("YYYYMMDD-hhmmss", timestamp())
}

source "amazon-ebs" "agent" {
  region        = var.region
  instance_type = var.builder_instance_type
  ssh_username  = "admin"
  ami_name      = "liveload-agent-${var.arch}-${local.stamp}"
  source_ami_filter {
    filters = {
      name                = "debian-12-${var.arch}-*"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = ["136693071363"] # Debian's official AMIs
    most_recent = true
  }
  tags = {
    "liveload:image" = "agent"
    # The protocol the agent speaks (liveload_proto::PROTOCOL_VERSION; a test keeps them
    # equal): `liveload doctor` reads it to tell an AMI this controller cannot use.
    "liveload:protocol" = "5"
    Name             = "liveload-agent-${var.arch}"
  }
}

build {
  sources = ["source.amazon-ebs.agent"]

  provisioner "file" {
    source      = var.agent_binary
    destination = "/tmp/liveload-agent"
  }
  provisioner "file" {
    source      = "images/ec2/liveload-agent.service"
    destination = "/tmp/liveload-agent.service"
  }
  provisioner "file" {
    source      = "images/ec2/liveload-agent-start"
    destination = "/tmp/liveload-agent-start"
  }
  provisioner "file" {
    source      = "images/ec2/liveload-imds.nft"
    destination = "/tmp/liveload-imds.nft"
  }
  provisioner "shell" {
    inline = [
      "sudo apt-get update -qq",
      "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium-headless-shell fonts-liberation fonts-noto-color-emoji nftables curl",
      "sudo useradd --system --create-home --uid 10001 liveload",
      "sudo install -m 0755 /tmp/liveload-agent /usr/local/bin/liveload-agent",
      "sudo install -m 0755 /tmp/liveload-agent-start /usr/local/bin/liveload-agent-start",
      "sudo install -m 0644 /tmp/liveload-agent.service /etc/systemd/system/liveload-agent.service",
      "sudo install -D -m 0644 /tmp/liveload-imds.nft /usr/local/lib/liveload/imds.nft",
      "sudo systemctl daemon-reload",
      # Started by the user data only (it writes the settings first): not enabled at boot.
      "sudo apt-get clean",
    ]
  }

  post-processor "manifest" {
    output = "images/ec2/manifest.json"
  }
}
