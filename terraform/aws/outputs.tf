output "region" {
  description = "liveload --ec2-region"
  value       = var.region
}

output "security_group_id" {
  description = "liveload --ec2-security-groups"
  value       = aws_security_group.agent.id
}

output "subnet_ids" {
  description = "liveload --ec2-subnets"
  value       = local.subnet_ids
}

output "launch_template_name" {
  description = "liveload --ec2-launch-template"
  value       = aws_launch_template.agent.name
}

output "agent_port" {
  description = "liveload --ec2-agent-port"
  value       = var.agent_port
}

output "controller_policy_arn" {
  description = "Attach to the IAM user or role that runs liveload."
  value       = aws_iam_policy.controller.arn
}

output "liveload_command" {
  description = "The run command with every option this module decides."
  value       = "liveload run --backend ec2 --ec2-region ${var.region} --ec2-launch-template ${aws_launch_template.agent.name} --ec2-subnets ${join(",", local.subnet_ids)} --ec2-security-groups ${aws_security_group.agent.id} --ec2-agent-port ${var.agent_port} --ec2-instance-type ${var.instance_type} SCENARIO.yaml"
}
