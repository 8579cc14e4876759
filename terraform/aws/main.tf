# What liveload needs in an AWS account, applied once: a security group that lets only the
# controller reach the agent port, a launch template for the baked agent AMI that terminates
# an instance when its agent powers it off, and an IAM policy with exactly the EC2 calls the
# controller makes. Outputs map one to one to `liveload run --backend ec2` options.

data "aws_vpc" "default" {
  count   = var.vpc_id == null ? 1 : 0
  default = true
}

locals {
  vpc_id = var.vpc_id != null ? var.vpc_id : data.aws_vpc.default[0].id
  tags   = merge({ "liveload:managed-by" = "terraform" }, var.tags)
}

data "aws_subnets" "vpc" {
  filter {
    name   = "vpc-id"
    values = [local.vpc_id]
  }
}

locals {
  subnet_ids = length(var.subnet_ids) > 0 ? var.subnet_ids : data.aws_subnets.vpc.ids
}

resource "aws_security_group" "agent" {
  name        = "${var.name}-agent"
  description = "liveload agents: the agent port from the controller only"
  vpc_id      = local.vpc_id
  tags        = local.tags

  ingress {
    description = "liveload controller to agent (TLS pinned to a per-run certificate)"
    from_port   = var.agent_port
    to_port     = var.agent_port
    protocol    = "tcp"
    cidr_blocks = [var.controller_cidr]
  }

  egress {
    description = "agents load the target under test"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_launch_template" "agent" {
  name                                 = "${var.name}-agent"
  image_id                             = var.ami_id
  instance_type                        = var.instance_type
  key_name                             = var.key_name
  instance_initiated_shutdown_behavior = "terminate"
  vpc_security_group_ids               = [aws_security_group.agent.id]
  tags                                 = local.tags

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.root_volume_gb
      volume_type           = "gp3"
      delete_on_termination = true
    }
  }

  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
}

data "aws_iam_policy_document" "controller" {
  statement {
    # The last five are `liveload doctor`'s reads (regions, type offerings, network rules).
    sid = "Describe"
    actions = [
      "ec2:DescribeInstances",
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeImages",
      "ec2:DescribeRegions",
      "ec2:DescribeInstanceTypeOfferings",
      "ec2:DescribeSecurityGroups",
      "ec2:DescribeSubnets",
      "ec2:DescribeLaunchTemplates",
    ]
    resources = ["*"]
  }
  statement {
    sid     = "Launch"
    actions = ["ec2:RunInstances"]
    resources = [
      "arn:aws:ec2:${var.region}::image/*",
      "arn:aws:ec2:${var.region}:*:instance/*",
      "arn:aws:ec2:${var.region}:*:volume/*",
      "arn:aws:ec2:${var.region}:*:network-interface/*",
      "arn:aws:ec2:${var.region}:*:subnet/*",
      "arn:aws:ec2:${var.region}:*:security-group/*",
      "arn:aws:ec2:${var.region}:*:launch-template/*",
      "arn:aws:ec2:${var.region}:*:key-pair/*",
    ]
  }
  statement {
    sid       = "TagAtLaunch"
    actions   = ["ec2:CreateTags"]
    resources = ["arn:aws:ec2:${var.region}:*:*/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["RunInstances"]
    }
  }
  statement {
    sid       = "TerminateOwnInstances"
    actions   = ["ec2:TerminateInstances"]
    resources = ["arn:aws:ec2:${var.region}:*:instance/*"]
    condition {
      test     = "Null"
      variable = "aws:ResourceTag/liveload:run-id"
      values   = ["false"]
    }
  }
}

resource "aws_iam_policy" "controller" {
  name        = "${var.name}-controller"
  description = "What the liveload controller calls on EC2 (attach to the user or role that runs liveload)"
  policy      = data.aws_iam_policy_document.controller.json
  tags        = local.tags
}
