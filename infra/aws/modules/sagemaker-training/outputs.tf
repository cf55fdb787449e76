output "execution_role_arn" {
  description = "Role SageMaker training jobs run as."
  value       = aws_iam_role.execution.arn
}

output "launcher_role_arn" {
  description = "Role that may start training jobs, only in the secure configuration."
  value       = aws_iam_role.launcher.arn
}

output "secret_arn" {
  description = "Secrets Manager secret for training-time secrets."
  value       = aws_secretsmanager_secret.training.arn
}

output "security_group_id" {
  description = "Security group of the training jobs."
  value       = aws_security_group.training.id
}

output "training_job_defaults" {
  description = "CreateTrainingJob fields the launcher role requires (merge them into every request)."
  value = {
    EnableNetworkIsolation                = true
    EnableInterContainerTrafficEncryption = true
    RoleArn                               = aws_iam_role.execution.arn
    VpcConfig                             = { Subnets = var.network.subnet_ids, SecurityGroupIds = [aws_security_group.training.id] }
    ResourceConfig                        = { VolumeKmsKeyId = var.kms_key_arn }
    OutputDataConfig                      = { KmsKeyId = var.kms_key_arn, S3OutputPath = "s3://${element(split(":", var.data.output_bucket_arn), 5)}/${var.data.output_prefix}" }
  }
}
