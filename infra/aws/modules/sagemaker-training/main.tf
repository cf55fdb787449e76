# Training environment on AWS: what SageMaker training jobs need to run isolated on the pipeline's
# accepted data, and a launcher role that can start a training job ONLY in that configuration.
#
# * execution role (assumed by SageMaker): read the training input prefix, write the model output
#   prefix, use the storage key through S3 only, pull the one training image, write its own logs,
#   read its one secret, and manage its network interfaces in the given subnets only.
# * launcher role: sagemaker:CreateTrainingJob is allowed only with network isolation, inter-container
#   traffic encryption, the given subnets and security group, and the storage key for volumes and
#   output (IAM condition keys sagemaker:NetworkIsolation, sagemaker:InterContainerTrafficEncryption,
#   sagemaker:VpcSubnets, sagemaker:VpcSecurityGroupIds, sagemaker:VolumeKmsKey,
#   sagemaker:OutputKmsKey); iam:PassRole of the execution role to SageMaker only.
# * security group: no ingress except between the job's own nodes (distributed training, encrypted
#   by inter-container traffic encryption), egress HTTPS to the VPC only (its endpoints).
# * a Secrets Manager secret (storage key) for training-time secrets.
#
# With network isolation the container has no network at all: SageMaker copies the input channel
# in and the output out with the execution role, so the input must already be the poisoning-gated
# export (`saip ingest export` then `saip scan`, run in the VPC) under `training_input_prefix`.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  tags       = merge(var.tags, { "saip:prefix" = var.prefix, "saip:managed-by" = "terraform" })
  job_arn    = "arn:${local.partition}:sagemaker:${local.region}:${local.account_id}:training-job/${var.prefix}-*"
  log_group  = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/aws/sagemaker/TrainingJobs"
  subnets    = [for s in var.network.subnet_ids : "arn:${local.partition}:ec2:${local.region}:${local.account_id}:subnet/${s}"]
}

resource "aws_security_group" "training" {
  # checkov:skip=CKV2_AWS_5:Attached by SageMaker to the training jobs' network interfaces (VpcConfig, required by the launcher role), which Terraform does not create.
  name        = "${var.prefix}-training"
  description = "${var.prefix} SageMaker training: node-to-node only, HTTPS to the VPC endpoints"
  vpc_id      = var.network.vpc_id
  tags        = merge(local.tags, { Name = "${var.prefix}-training" })
}

resource "aws_vpc_security_group_ingress_rule" "nodes" {
  security_group_id            = aws_security_group.training.id
  description                  = "Between the nodes of one training job (distributed training)"
  referenced_security_group_id = aws_security_group.training.id
  ip_protocol                  = "-1"
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "nodes" {
  security_group_id            = aws_security_group.training.id
  description                  = "Between the nodes of one training job (distributed training)"
  referenced_security_group_id = aws_security_group.training.id
  ip_protocol                  = "-1"
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "endpoints" {
  security_group_id = aws_security_group.training.id
  description       = "HTTPS to the VPC's interface endpoints"
  cidr_ipv4         = var.network.vpc_cidr
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  tags              = local.tags
}

resource "aws_secretsmanager_secret" "training" {
  # checkov:skip=CKV2_AWS_57:Rotation needs a rotation function specific to what the secret holds (e.g. an experiment-tracker token); it is the deployer's to attach.
  name                    = "${var.prefix}/training"
  description             = "${var.prefix}: secrets available to training jobs (read by the execution role only)"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 30
  tags                    = local.tags
}

# ------------------------------------------------------------------------------ execution --

resource "aws_iam_role" "execution" {
  name        = "${var.prefix}-training-execution"
  description = "${var.prefix}: SageMaker training jobs (network-isolated, in the VPC)."
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "sagemaker.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = {
        StringEquals = { "aws:SourceAccount" = local.account_id }
        ArnLike      = { "aws:SourceArn" = local.job_arn }
      }
    }]
  })
  tags = local.tags
}

resource "aws_iam_role_policy" "execution" {
  name = "least-privilege"
  role = aws_iam_role.execution.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "ListInput"
        Effect   = "Allow"
        Action   = ["s3:ListBucket"]
        Resource = [var.data.input_bucket_arn]
        Condition = {
          StringLike = { "s3:prefix" = ["${var.data.input_prefix}*"] }
        }
      },
      {
        Sid      = "ReadInput"
        Effect   = "Allow"
        Action   = ["s3:GetObject"]
        Resource = ["${var.data.input_bucket_arn}/${var.data.input_prefix}*"]
      },
      {
        Sid      = "WriteModels"
        Effect   = "Allow"
        Action   = ["s3:PutObject"]
        Resource = ["${var.data.output_bucket_arn}/${var.data.output_prefix}*"]
      },
      {
        Sid      = "StorageKeyThroughS3"
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
        Resource = [var.kms_key_arn]
        Condition = {
          StringEquals = { "kms:ViaService" = ["s3.${local.region}.amazonaws.com", "secretsmanager.${local.region}.amazonaws.com"] }
        }
      },
      {
        Sid      = "VolumeKey"
        Effect   = "Allow"
        Action   = ["kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext"]
        Resource = [var.kms_key_arn]
        Condition = {
          StringEquals = { "kms:ViaService" = "ec2.${local.region}.amazonaws.com" }
          Bool         = { "kms:GrantIsForAWSResource" = "true" }
        }
      },
      {
        Sid      = "PullTrainingImage"
        Effect   = "Allow"
        Action   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
        Resource = [var.training_image_repository_arn]
      },
      {
        Sid      = "EcrToken"
        Effect   = "Allow"
        Action   = ["ecr:GetAuthorizationToken"]
        Resource = ["*"] # the action supports no resource-level permission
      },
      {
        Sid      = "OwnLogs"
        Effect   = "Allow"
        Action   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
        Resource = [local.log_group, "${local.log_group}:log-stream:${var.prefix}-*"]
      },
      {
        Sid      = "ReadSecret"
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue"]
        Resource = [aws_secretsmanager_secret.training.arn]
      },
      {
        Sid      = "DescribeNetwork"
        Effect   = "Allow"
        Action   = ["ec2:DescribeDhcpOptions", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets", "ec2:DescribeVpcs"]
        Resource = ["*"] # Describe* supports no resource-level permission
      },
      {
        Sid    = "NetworkInterfacesInTheSubnets"
        Effect = "Allow"
        Action = ["ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface", "ec2:DeleteNetworkInterfacePermission"]
        Resource = concat(local.subnets, [
          aws_security_group.training.arn,
          "arn:${local.partition}:ec2:${local.region}:${local.account_id}:network-interface/*",
        ])
        Condition = {
          ArnEqualsIfExists = { "ec2:Vpc" = "arn:${local.partition}:ec2:${local.region}:${local.account_id}:vpc/${var.network.vpc_id}" }
        }
      },
    ]
  })
}

# ------------------------------------------------------------------------------- launcher --

resource "aws_iam_role" "launcher" {
  name        = "${var.prefix}-training-launcher"
  description = "${var.prefix}: starts SageMaker training jobs, only isolated, encrypted and in the VPC."
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { AWS = var.launcher_principal_arns }
      Action    = "sts:AssumeRole"
    }]
  })
  tags = local.tags
}

resource "aws_iam_role_policy" "launcher" {
  name = "secure-training-jobs-only"
  role = aws_iam_role.launcher.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "CreateSecureTrainingJob"
        Effect   = "Allow"
        Action   = ["sagemaker:CreateTrainingJob"]
        Resource = [local.job_arn]
        Condition = {
          Bool = {
            "sagemaker:NetworkIsolation"                = "true"
            "sagemaker:InterContainerTrafficEncryption" = "true"
          }
          StringEquals = {
            "sagemaker:VolumeKmsKey" = var.kms_key_arn
            "sagemaker:OutputKmsKey" = var.kms_key_arn
          }
          "ForAllValues:StringEquals" = {
            "sagemaker:VpcSubnets"          = var.network.subnet_ids
            "sagemaker:VpcSecurityGroupIds" = [aws_security_group.training.id]
          }
          Null = {
            "sagemaker:VpcSubnets"          = "false"
            "sagemaker:VpcSecurityGroupIds" = "false"
          }
        }
      },
      {
        Sid      = "ManageOwnJobs"
        Effect   = "Allow"
        Action   = ["sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob"]
        Resource = [local.job_arn]
      },
      {
        Sid      = "PassExecutionRole"
        Effect   = "Allow"
        Action   = ["iam:PassRole"]
        Resource = [aws_iam_role.execution.arn]
        Condition = {
          StringEquals = { "iam:PassedToService" = "sagemaker.amazonaws.com" }
        }
      },
    ]
  })
}
