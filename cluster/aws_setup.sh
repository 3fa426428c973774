#!/usr/bin/env bash
# cluster/aws_setup.sh: the AWS resources cluster.yaml expects, made once per account (idempotent:
# run it again to update the policies or the SSH range).
#
#   SSH_CIDR=$(curl -s https://checkip.amazonaws.com)/32 bash cluster/aws_setup.sh
#
# Creates, in AWS_REGION (default us-west-2):
#   - the results bucket peft-sweeps-<account> (private, encrypted): Ray Tune results and
#     checkpoints (ray_results/), MLflow artifacts (mlflow/);
#   - IAM roles + instance profiles peft-sweeps-head and peft-sweeps-worker with the least
#     privilege policies in cluster/iam/ (bucket only, SSM /peft-sweeps/* only; workers: the
#     HF token parameter and checkpoints only);
#   - the security group peft-sweeps: SSH from SSH_CIDR only, all traffic between its members
#     (Ray, MLflow, the database); Ray uses it as it is (it adds SSH from anywhere only to a
#     group it creates itself);
#   - MLflow's store, which outlives `ray down`: a PostgreSQL database (RDS db.t4g.micro,
#     private, reachable from the group only) whose URI goes to SSM /peft-sweeps/mlflow-backend-uri,
#     and the MLflow admin password in SSM /peft-sweeps/mlflow-admin-password (both SecureString).
#     NO_DATABASE=1 skips the database: MLflow then keeps its runs on the head's disk, and
#     `ray down` deletes them (the head prints a warning at start).
set -euo pipefail

REGION=${AWS_REGION:-us-west-2}
NAME=peft-sweeps
HERE=$(cd "$(dirname "$0")" && pwd)
: "${SSH_CIDR:?set SSH_CIDR to the address range allowed to SSH to the head, e.g. \$(curl -s https://checkip.amazonaws.com)/32}"
case "$SSH_CIDR" in
  0.0.0.0/0|::/0) echo "SSH_CIDR=$SSH_CIDR opens SSH to the whole internet; give your own range (e.g. 203.0.113.7/32)" >&2; exit 2 ;;
  */*) ;;
  *) echo "SSH_CIDR=$SSH_CIDR is not a CIDR range (e.g. 203.0.113.7/32)" >&2; exit 2 ;;
esac

ACCOUNT=$(aws sts get-caller-identity --query Account --output text)
BUCKET=$NAME-$ACCOUNT
aws() { command aws --region "$REGION" "$@"; }

echo "bucket s3://$BUCKET"
if ! aws s3api head-bucket --bucket "$BUCKET" 2>/dev/null; then
  aws s3api create-bucket --bucket "$BUCKET" --create-bucket-configuration LocationConstraint="$REGION" >/dev/null
fi
aws s3api put-public-access-block --bucket "$BUCKET" --public-access-block-configuration \
  BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
aws s3api put-bucket-encryption --bucket "$BUCKET" --server-side-encryption-configuration \
  '{"Rules":[{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"AES256"}}]}'

policy() { sed -e "s/ACCOUNT_ID/$ACCOUNT/g" -e "s/REGION/$REGION/g" "$HERE/iam/$1-policy.json"; }
for ROLE in head worker; do
  echo "IAM role and instance profile $NAME-$ROLE"
  aws iam get-role --role-name "$NAME-$ROLE" >/dev/null 2>&1 ||
    aws iam create-role --role-name "$NAME-$ROLE" --assume-role-policy-document "file://$HERE/iam/trust.json" >/dev/null
  aws iam put-role-policy --role-name "$NAME-$ROLE" --policy-name "$NAME-$ROLE" --policy-document "$(policy "$ROLE")"
  if ! aws iam get-instance-profile --instance-profile-name "$NAME-$ROLE" >/dev/null 2>&1; then
    aws iam create-instance-profile --instance-profile-name "$NAME-$ROLE" >/dev/null
    aws iam add-role-to-instance-profile --instance-profile-name "$NAME-$ROLE" --role-name "$NAME-$ROLE"
  fi
done

echo "security group $NAME (SSH from $SSH_CIDR only)"
VPC=$(aws ec2 describe-vpcs --filters Name=isDefault,Values=true --query 'Vpcs[0].VpcId' --output text)
SG=$(aws ec2 describe-security-groups --filters Name=group-name,Values=$NAME Name=vpc-id,Values="$VPC" --query 'SecurityGroups[0].GroupId' --output text)
if [ "$SG" = "None" ]; then
  SG=$(aws ec2 create-security-group --group-name $NAME --description "peft-sweeps Ray cluster" --vpc-id "$VPC" --query GroupId --output text)
  aws ec2 authorize-security-group-ingress --group-id "$SG" --ip-permissions "IpProtocol=-1,UserIdGroupPairs=[{GroupId=$SG}]" >/dev/null
fi
# exactly one SSH rule: the given range (an earlier range is revoked)
OLD=$(aws ec2 describe-security-groups --group-ids "$SG" --query 'SecurityGroups[0].IpPermissions[?FromPort==`22`].IpRanges[].CidrIp' --output text)
for CIDR in $OLD; do
  [ "$CIDR" = "$SSH_CIDR" ] || aws ec2 revoke-security-group-ingress --group-id "$SG" --protocol tcp --port 22 --cidr "$CIDR" >/dev/null
done
echo " $OLD " | grep -q " $SSH_CIDR " || aws ec2 authorize-security-group-ingress --group-id "$SG" --protocol tcp --port 22 --cidr "$SSH_CIDR" >/dev/null

secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }
if ! aws ssm get-parameter --name /$NAME/mlflow-admin-password >/dev/null 2>&1; then
  echo "MLflow admin password -> SSM /$NAME/mlflow-admin-password"
  aws ssm put-parameter --name /$NAME/mlflow-admin-password --type SecureString --value "$(secret)" >/dev/null
fi

if [ "${NO_DATABASE:-0}" != 1 ] && ! aws ssm get-parameter --name /$NAME/mlflow-backend-uri >/dev/null 2>&1; then
  echo "PostgreSQL for MLflow (RDS $NAME-mlflow, ~10 min the first time)"
  PASSWORD=$(secret)
  aws rds create-db-instance --db-instance-identifier $NAME-mlflow --engine postgres --db-instance-class db.t4g.micro \
    --allocated-storage 20 --storage-encrypted --no-publicly-accessible --backup-retention-period 7 \
    --db-name mlflow --master-username mlflow --master-user-password "$PASSWORD" --vpc-security-group-ids "$SG" >/dev/null
  aws rds wait db-instance-available --db-instance-identifier $NAME-mlflow
  HOST=$(aws rds describe-db-instances --db-instance-identifier $NAME-mlflow --query 'DBInstances[0].Endpoint.Address' --output text)
  aws ssm put-parameter --name /$NAME/mlflow-backend-uri --type SecureString \
    --value "postgresql://mlflow:$PASSWORD@$HOST:5432/mlflow" >/dev/null
fi
echo "done: ray up cluster.yaml"
