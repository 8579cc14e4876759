variable "region" {
  type        = string
  description = "AWS region for agent instances (liveload --ec2-region)."
  default     = "us-east-1"
}

variable "name" {
  type        = string
  description = "Prefix of every resource this module creates."
  default     = "liveload"
}

variable "controller_cidr" {
  type        = string
  description = "Where the liveload controller connects from (your laptop's or CI's public IP as a.b.c.d/32). Only it may reach the agent port."
}

variable "agent_port" {
  type        = number
  description = "The port agents listen on (liveload --ec2-agent-port)."
  default     = 7070
}

variable "vpc_id" {
  type        = string
  description = "An existing VPC to use; null uses the region's default VPC."
  default     = null
}

variable "subnet_ids" {
  type        = list(string)
  description = "Subnets for agent instances (public ones, unless the controller runs inside the VPC); empty uses every subnet of the VPC."
  default     = []
}

variable "ami_id" {
  type        = string
  description = "The agent AMI baked by images/ec2 (packer build prints it)."
}

variable "instance_type" {
  type        = string
  description = "Default instance type (liveload --ec2-instance-type overrides it per run)."
  default     = "c7i.large"
}

variable "root_volume_gb" {
  type        = number
  description = "Root volume size of agent instances, GiB."
  default     = 16
}

variable "key_name" {
  type        = string
  description = "An EC2 key pair for SSH debugging of agent instances (optional; liveload never needs it)."
  default     = null
}

variable "tags" {
  type        = map(string)
  description = "Extra tags on everything this module creates."
  default     = {}
}
