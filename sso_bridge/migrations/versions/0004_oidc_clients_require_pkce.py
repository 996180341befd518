"""oidc clients require_pkce

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # Existing clients keep requiring PKCE until the next start syncs the configuration.
    with op.batch_alter_table('oidc_clients', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('require_pkce', sa.Boolean(), server_default=sa.true(), nullable=False)
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('oidc_clients', schema=None) as batch_op:
        batch_op.drop_column('require_pkce')
